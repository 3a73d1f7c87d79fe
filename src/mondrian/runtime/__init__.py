"""The model runtime: loading models and processors, generation, tiny offline checkpoints.

Kept free of imports so that light code can import `mondrian.runtime.<module>` without
pulling in torch or transformers; each module imports the heavy stack it needs itself.
"""
