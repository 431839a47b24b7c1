"""si: a transform hub for long-running stream programs, compatible with Scramjet Transform Hub."""

__version__ = "0.1.0"
