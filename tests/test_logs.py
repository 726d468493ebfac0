"""A step that ends in a user error says so in one line, in its log and on stderr; a bug keeps its traceback."""

import subprocess
import sys


def run(tmp_path, raise_statement):
    log = tmp_path / "step.log"
    code = (
        "from mammoscale.logs import configure; from mammoscale.dataset.manifest import ManifestError; "
        f"configure({str(log)!r}); {raise_statement}"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    return result, log.read_text()


def test_user_error_is_one_line_without_traceback(tmp_path):
    result, log = run(tmp_path, "raise ManifestError('train.csv lacks column view')")
    assert result.returncode == 1
    assert result.stderr.strip() == "error: train.csv lacks column view"
    assert "train.csv lacks column view" in log and "Traceback" not in log


def test_a_bug_keeps_its_traceback_in_the_log_and_on_stderr(tmp_path):
    result, log = run(tmp_path, "raise KeyError('oops')")
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "Traceback" in log and "KeyError" in log
