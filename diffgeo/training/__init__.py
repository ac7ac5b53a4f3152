"""Training and exporting the embedded models from their recipes (:mod:`diffgeo.models.recipes`)."""

