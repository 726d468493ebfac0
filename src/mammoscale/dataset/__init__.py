"""The dataset as the study sees it: an RSNA-layout directory, turned into breasts, or audited.

- :mod:`~mammoscale.dataset.manifest`: one row per breast (CC + MLO), the exclusions with their
  reasons, the patient-level split and the shards;
- :mod:`~mammoscale.dataset.audit`: every listed image decoded, and what was found (the
  optional ``decode_audit`` target);
- :mod:`~mammoscale.dataset.chestxray14`: NIH's ChestX-ray14 layout as one row per image, its
  fourteen findings, the official test list and a patient-level train/val split.

Imports: pandas, numpy, and :mod:`~mammoscale.dicom`, :mod:`~mammoscale.files`,
:mod:`~mammoscale.processes`; never torch.
"""
