"""Datasets: Labelme/VIA/mask conversion, COCO loading, catalogs, mappers and loaders."""
