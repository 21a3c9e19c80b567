"""Firehose data transformation that returns every record unchanged.

The reference implementation of the contract: every recordId comes back once,
with result "Ok" and the original base64 data. Runs as-is on AWS Lambda.
"""


def lambda_handler(event, context):
    return {
        "records": [
            {"recordId": record["recordId"], "result": "Ok", "data": record["data"]}
            for record in event["records"]
        ]
    }


handler = lambda_handler
