"""Each shard's fingerprint of the files it reads: a change to one file changes its shard's alone."""

from __future__ import annotations

import os

import pandas as pd

from mammoscale import files, synthetic
from mammoscale.dataset import manifest, sources


def test_a_changed_file_changes_its_shards_fingerprint_alone_whatever_its_time(tmp_path):
    root = synthetic.generate(tmp_path / "rsna", n_patients=6, image_shape=(96, 80), seed=4)
    table = pd.read_csv(root / files.TRAIN_CSV, dtype=str)
    before = sources.fingerprints(root, 3)
    assert before.files == len(table) and len(before.shards) == 3
    row = table.iloc[0]
    path = files.image_path(root, row["patient_id"], row["image_id"])
    stat = path.stat()
    path.write_bytes(path.read_bytes())
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns - 10**9))  # older, same size: a re-download
    after = sources.fingerprints(root, 3)
    changed = [shard for shard in before.shards if before.shards[shard] != after.shards[shard]]
    assert changed == [files.shard_name(sources.shard_of(int(row["patient_id"]), 3))]
    assert after.absent == before.absent
    path.unlink()
    gone = sources.fingerprints(root, 3)
    assert gone.absent != before.absent and gone.shards[changed[0]] not in (
        before.shards[changed[0]],
        after.shards[changed[0]],
    )


def test_the_manifest_puts_each_breast_in_the_shard_whose_files_are_fingerprinted(tmp_path):
    root = synthetic.generate(tmp_path / "rsna", n_patients=8, image_shape=(96, 80), seed=5)
    breasts, _, _ = manifest.build(root, split_fractions={"train": 0.6, "val": 0.2, "test": 0.2}, seed=0, n_shards=4)
    assert (breasts["shard"] == breasts["patient_id"] % 4).all()


def test_rows_whose_ids_are_not_integers_are_left_to_the_manifest(tmp_path):
    (tmp_path / files.TRAIN_CSV).write_text("patient_id,image_id\n12,34\n../x,35\n13, 36\n")
    assert sources.listed(tmp_path) == [("12", "34"), ("13", "36")]
    (tmp_path / files.TRAIN_CSV).write_text("patient,image\n12,34\n")
    assert sources.listed(tmp_path) == []
