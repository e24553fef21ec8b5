"""Watched local (or mounted) folders: `block.LocalFolderSource`."""
