"""The front door: what every awsJson request passes through before an operation runs.

The Firehose API and the Kinesis API share it, so they answer alike. In order
(security.md §1, kinesis-fidelity.md §5.1):

1. size, before the body is read (``Content-Length``) and while it streams in;
2. ``Content-Encoding`` gzip/deflate, inflated under a size and ratio cap;
3. content type (JSON, and CBOR where the API has it);
4. ``X-Amz-Target``: the operation;
5. the body: a JSON object or CBOR map, no deeper than the nesting limit;
6. authentication: AWS Signature Version 4 (``sigv4``), when it is on;
7. authorization: the caller's IAM policies for ``service:Operation`` on the resource ARN (``policy``);
8. the request's shape, from the AWS service model (``shapes``);
9. the operation.
"""
