// Validates prometheus-operator ServiceMonitor/PodMonitor documents (a JSON array on stdin)
// against the upstream CRD schemas as packaged by @kubernetes-models/prometheus-operator.
// Prints one line per document; exits 1 when any is invalid or of another kind.
import { readFileSync } from "node:fs";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";
import { PodMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor";

const models = { ServiceMonitor, PodMonitor };
const docs = JSON.parse(readFileSync(0, "utf8"));
let failed = 0;
for (const doc of docs) {
  const Model = doc.apiVersion === "monitoring.coreos.com/v1" ? models[doc.kind] : undefined;
  const name = `${doc.kind}/${doc.metadata?.name}`;
  if (!Model) {
    console.log(`FAIL ${name}: not a monitoring.coreos.com/v1 ServiceMonitor or PodMonitor`);
    failed++;
    continue;
  }
  try {
    new Model(doc).validate();
    console.log(`ok ${name}`);
  } catch (err) {
    console.log(`FAIL ${name}: ${err.message}`);
    failed++;
  }
}
process.exit(failed ? 1 : 0);
