"""Reading trained runs: explanations, localisation, embeddings, prediction on new videos.

    explain.py       occurrence maps on clips, the prototype gallery, local explanations
    localization.py  occurrence-map and Grad-CAM IoU against LV masks (docs/method.md §6)
    faithfulness.py  deletion test, parameter randomisation, stability under input noise
    embeddings.py    pooled features, t-SNE/UMAP with the prototypes, label–angle order
    inference.py     EF and explanations for the user's own AVI files
    plots.py         drawing primitives shared by the figures (overlays, strips, GIFs)
"""
