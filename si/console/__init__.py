"""The web console (issue 17): static files the hub serves, and ``si hub console``'s proxy.

The page (``static/``) is plain HTML, CSS and JavaScript with no framework and no build step;
it is an API client like any other. ``gate`` and ``proxy`` put a hub on a Unix socket within
a browser's reach on a loopback port, behind a one-time link.
"""
