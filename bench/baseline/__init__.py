"""BENCH-ONLY BASELINE: the seed's Channels-tutorial chat, never on the product path.

It exists so every product figure can be given as a ratio to what the seed
shipped, measured in the same run on the same machine.
"""
