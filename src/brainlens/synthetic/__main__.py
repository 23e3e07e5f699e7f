"""``python -m brainlens.synthetic OUT_DIR --seed N ...``: write the demo dataset."""

from brainlens.synthetic.dataset import main

raise SystemExit(main())
