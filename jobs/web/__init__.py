"""``mktg serve``: the web console and the REST API (issue 14).

Modules: :mod:`jobs.web.models` (users, API tokens, audit log tables), :mod:`jobs.web.security` (password and
token hashing, roles and their rights, CSRF), :mod:`jobs.web.services` (every database and file access of the web
layer, over the application functions), :mod:`jobs.web.app` (the FastAPI application: API and console pages).
"""
