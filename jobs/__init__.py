"""The application: settings, pipeline orchestration, scheduled jobs and the CLI. Nothing imports it."""
