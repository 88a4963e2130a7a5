"""Evaluation harness: tasks, sandboxed execution, resumable runs, reports."""
