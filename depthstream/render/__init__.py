"""Drawing depth, shared by the bridge, the client and the bench: colorize.py (the colormaps and
the stable range), raw_depth.py (16-bit depth with the numbers that map it back, on the stream
and in PNG files). Outside the export's fingerprint (export/repository.py): a change to how depth
is drawn does not export the models again.
"""
