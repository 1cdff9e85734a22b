"""Data files shipped with wsol (``imagenet_classes.txt``: the 1000 ILSVRC2012 class names)."""
