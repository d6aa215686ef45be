import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data" / "totalsegmentator_example"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real example CT in ../shared/data; tests using it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real CT example data not found at {SHARED_DATA} (../shared/data is optional)")
    return SHARED_DATA
