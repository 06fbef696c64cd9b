"""Input pipelines: tf.Example decoders, parsers and the file reader.

Submodules are imported by name (`from vision_core.dataloaders import segmentation_input`) so that
importing the package stays cheap.
"""
