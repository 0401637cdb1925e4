import sys
from pathlib import Path

# Shared fakes live in tests/fakes.py; make them importable as `fakes`.
sys.path.insert(0, str(Path(__file__).parent))
