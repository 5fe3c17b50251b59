"""The SemiEvol stages, one module each; ``semievol.pipeline`` runs them in order."""
