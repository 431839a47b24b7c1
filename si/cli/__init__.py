"""The ``si`` command line: one Typer app (``app``), one module per command group, one renderer.

Commands parse arguments, call :class:`si.client.HubClient`, :mod:`si.package` or
:mod:`si.daemon`, and hand results to :mod:`si.cli.render`. Heavy modules are imported inside
the commands that need them, so ``si --help`` starts instantly.
"""
