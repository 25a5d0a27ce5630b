"""Layer 5, vision: images and videos in, faces out: decoding, face detection and crops,
video sampling and tracking, annotated pictures. Imports the layers below it."""
