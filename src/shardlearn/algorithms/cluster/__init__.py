"""Distributed clustering: k-means (Lloyd, k-means|| / k-means++ seeding), bisecting
k-means, and agglomerative clustering on micro-cluster summaries."""
