"""synthaug: does synthetic data from generative models make an image classifier better?"""

__version__ = "0.1.0"
