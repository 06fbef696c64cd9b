"""Small helpers shared by the pipeline steps."""

# The code version an image bakes in at build time (the Dockerfile's CODE_VERSION argument):
# the compiling machine reads it (pipelines.training.code_version) and so does the push step
# inside the image, for the lineage it records.
CODE_VERSION_ENV = "VISION_PIPELINES_CODE_VERSION"
