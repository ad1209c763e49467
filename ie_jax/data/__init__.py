"""Input data: target sets, Grain pipelines, and the MoCo v3 views."""
