"""xraylens: normal/abnormal classification of musculoskeletal radiographs, with measured explanations.

Research software, not a medical device. Importing this package does no work:
no downloads, no seeding, no logging setup.
"""

from xraylens._version import __version__

__all__ = ["__version__"]
