// A default-configured AWS SDK for JavaScript v3 Kinesis client (HTTP/2 by default) against the sidecar.
// Usage: node kinesis_client.mjs ENDPOINT STREAM  (keys from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, else "testing")
import {
  KinesisClient, CreateStreamCommand, PutRecordsCommand, GetShardIteratorCommand, GetRecordsCommand,
} from "@aws-sdk/client-kinesis";

const [endpoint, stream] = process.argv.slice(2);
const credentials = {
  accessKeyId: process.env.AWS_ACCESS_KEY_ID || "testing",
  secretAccessKey: process.env.AWS_SECRET_ACCESS_KEY || "testing",
};
const client = new KinesisClient({ endpoint, region: "us-east-1", credentials });
await client.send(new CreateStreamCommand({ StreamName: stream, ShardCount: 1 }));
const records = [0, 1, 2].map((i) => ({ Data: new TextEncoder().encode(`js-${i}`), PartitionKey: `k${i}` }));
const put = await client.send(new PutRecordsCommand({ StreamName: stream, Records: records }));
const it = await client.send(new GetShardIteratorCommand({ StreamName: stream, ShardId: "shardId-000000000000", ShardIteratorType: "TRIM_HORIZON" }));
const got = await client.send(new GetRecordsCommand({ ShardIterator: it.ShardIterator }));
console.log(JSON.stringify({
  handler: client.config.requestHandler.constructor.name,
  failed: put.FailedRecordCount,
  data: got.Records.map((r) => new TextDecoder().decode(r.Data)),
  timestampIsDate: got.Records[0].ApproximateArrivalTimestamp instanceof Date,
}));
client.destroy();
