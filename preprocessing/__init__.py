"""Converters from each dataset's official files to the image-folder layout the loaders read."""
