"""The ``si`` command line: one click group per module, one renderer for everything printed.

Commands parse arguments, call :class:`si.client.HubClient`, :mod:`si.package` or
:mod:`si.daemon`, and hand results to :mod:`si.cli.render`. Heavy modules are imported inside
the commands that need them, so ``si --help`` and ``si inst ls`` start fast.
"""
