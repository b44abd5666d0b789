"""Tests of topgun.rbac: patterns, evaluation, policy files, reloading and the CLI."""
