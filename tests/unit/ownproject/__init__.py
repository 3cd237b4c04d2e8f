"""A minimal second Channels project, run under `python -m wsworker` by
tests/unit/test_wsworker_own_project.py: what docs/architecture.md's "Run your
own Channels project on this stack" promises, tried as a new user would."""
