"""``PYTHONPATH=tests python -m envcheck``: check the workflow's rule envs."""

from envcheck.check import main

raise SystemExit(main())
