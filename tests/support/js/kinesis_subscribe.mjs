// SubscribeToShard with a default-configured AWS SDK for JavaScript v3 Kinesis client (HTTP/2 by default).
// Usage: node kinesis_subscribe.mjs ENDPOINT CONSUMER_ARN SHARD_ID RECORDS
// Reads from TRIM_HORIZON until RECORDS records arrived, then prints what it got as one JSON line and ends
// the subscription: leaving the loop does not end the HTTP/2 stream (the SDK's isolated session would wait
// for the server to end it, up to the subscription's 5 minutes), aborting the request does.
import { KinesisClient, SubscribeToShardCommand } from "@aws-sdk/client-kinesis";

const [endpoint, consumerArn, shardId, wanted] = process.argv.slice(2);
const credentials = {
  accessKeyId: process.env.AWS_ACCESS_KEY_ID || "testing",
  secretAccessKey: process.env.AWS_SECRET_ACCESS_KEY || "testing",
};
const client = new KinesisClient({ endpoint, region: "us-east-1", credentials });
const subscription = new AbortController();
const out = await client.send(new SubscribeToShardCommand({
  ConsumerARN: consumerArn, ShardId: shardId, StartingPosition: { Type: "TRIM_HORIZON" },
}), { abortSignal: subscription.signal });
const data = [];
let continuation = null;
let millisBehindLatest = null;
for await (const event of out.EventStream) {
  if (event.SubscribeToShardEvent) {
    const body = event.SubscribeToShardEvent;
    data.push(...body.Records.map((r) => new TextDecoder().decode(r.Data)));
    continuation = body.ContinuationSequenceNumber;
    millisBehindLatest = body.MillisBehindLatest;
    if (data.length >= Number(wanted)) break;
  }
}
console.log(JSON.stringify({
  handler: client.config.requestHandler.constructor.name, data, continuation, millisBehindLatest,
}));
subscription.abort();
client.destroy();
