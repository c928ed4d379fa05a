"""Plain audio work on stem files: decode in blocks, analyse, mix, encode, draw; a worker pool.

Everything here takes and returns file paths and plain values. No Discord, HTTP or store: the
services decide what to fetch and send; this package only turns files into files and figures.
Every function that decodes runs in a worker process (stembot.audio.pool), never on the event
loop.
"""
