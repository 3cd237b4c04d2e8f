"""Custom checkov checks for docker-compose.yml (checkov ships none for compose)."""
