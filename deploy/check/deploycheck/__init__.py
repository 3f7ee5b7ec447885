"""The deployment check behind scripts/test-deploy, one module per subject (entry point:
deploy/check/check_deploy.py). Every check prints one line through `common.R`."""
