"""The dataset error every data module raises: its own module, so that real.py, fractions.py and image_files.py
import it without importing each other."""


class DatasetError(ValueError):
    """Bad dataset input; the one-line message names the file, folder or name at fault."""
