"""MII Legacy's text tasks on encoder models (BERT, RoBERTa, XLM-R, DistilBERT), served by mii_core.legacy."""
