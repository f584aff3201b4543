"""`python -m fmjax.main` with gs:// served by the test bucket at $FMJAX_TEST_BUCKET (for runs
in other processes, e.g. the multi-process test): python tests/bucket_main.py <fmjax flags>."""

import os
import runpy
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fake_bucket import local_bucket  # noqa: E402

if __name__ == "__main__":
  with local_bucket(os.environ["FMJAX_TEST_BUCKET"]):
    runpy.run_module("fmjax.main", run_name="__main__", alter_sys=True)
