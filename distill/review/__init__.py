"""`make review`: a local web page to see and fix the teacher's labels, the student's errors and every run.

Labels (data/routes.jsonl and its rejects), Fix (one record: accept / change / reject, saved to
data/overrides.jsonl), Student (the latest evaluation) and Runs (every models/*/student.json). Served on
127.0.0.1 only; nothing leaves the machine. `create_app` is the Flask app factory (tests drive it in Chromium).
"""

from .app import create_app

__all__ = ["create_app"]
