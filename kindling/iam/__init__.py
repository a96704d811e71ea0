"""A small IAM and STS: roles, policies, role sessions and IAM's evaluation logic (see docs/iam.md)."""
