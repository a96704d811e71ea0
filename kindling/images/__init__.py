"""Container images for PackageType Image functions: where they come from (sources), how they are pulled
and unpacked (pull, unpack), kept (store) and run (run). See docs/runtimes-images.md."""
