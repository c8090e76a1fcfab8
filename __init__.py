"""affcli: cache frozen backbone features of affective video once, then train heads and ablations in minutes.

The repository's top-level folders (`cache/`, `common/`, `pipeline/`, `heads/`, `pointcloud/`) install as
subpackages of this one package, so user code writes `from affcli.cache import load_table`.
"""

__version__ = "0.1.0"
