// A local SQS endpoint for `make run`, on loopback only: fauxqs's own command listens on all
// interfaces, so this builds its app and listens on 127.0.0.1. In memory: gone when it stops.
import { buildApp } from "fauxqs";

const port = Number(process.env.LOCAL_SQS_PORT ?? "4566");
const region = process.env.AWS_REGION ?? "us-east-1";
const app = buildApp({ logger: false, host: "127.0.0.1", defaultRegion: region });

await app.listen({ port, host: "127.0.0.1" });
console.log(`fauxqs: SQS endpoint on http://127.0.0.1:${port} (in memory, region ${region})`);

for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"]) {
  process.on(signal, () => app.close().then(() => process.exit(0)));
}
