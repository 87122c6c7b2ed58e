"""What every image reader refuses, and the error it refuses with.

A module of its own because both readers need it: :mod:`xraylens.data.images`
(PNG/JPEG, and the dispatcher) and :mod:`xraylens.data.dicom`. The dispatcher
reaches down into the DICOM reader, so the reader must not reach back up for
its error type; both take it from here. Callers keep importing these names from
:mod:`xraylens.data.images`, the contract's public face.
"""

DEFAULT_MAX_PIXELS = 50_000_000  # largest MURA image is ~ 5 MP; 50 MP leaves room for big DR detectors


class ImageReadError(ValueError):
    """A file that cannot be read as a radiograph; the message names the file, the problem and the fix."""


class MissingExtraError(ImageReadError, ImportError):
    """A file that needs an optional extra which is not installed (e.g. DICOM without pydicom).

    Both kinds at once: batch readers skip it like any unreadable file (and go on
    with the rest), while code that catches ImportError to name the extra still does.
    """
