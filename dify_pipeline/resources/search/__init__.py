"""The search cluster the day is published to: Elasticsearch 8.x/9.x or OpenSearch 2.x/3.x, behind one sink."""

from dify_pipeline.resources.search.cluster import SearchCluster, SearchClusterError
from dify_pipeline.resources.search.lease import DayLease, LeaseUnavailable
from dify_pipeline.resources.search.sink import BulkOutcome, SearchSink

__all__ = ["BulkOutcome", "DayLease", "LeaseUnavailable", "SearchCluster", "SearchClusterError", "SearchSink"]
