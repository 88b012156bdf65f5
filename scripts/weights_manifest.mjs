// Writes weights/manifest.json (file, SHA-256, size) for the shipped weights; the app checks downloads against
// it. Run after replacing the weights: `node scripts/weights_manifest.mjs` (the browser tests fail if it is stale).
import crypto from 'node:crypto';
import fs from 'node:fs';

const file = process.argv.slice(2).find((a) => !a.startsWith('--')) || 'edm_qm9_9x128.safetensors';
const bytes = fs.readFileSync(`weights/${file}`);
const manifest = { file, sha256: crypto.createHash('sha256').update(bytes).digest('hex'), bytes: bytes.length };
if (process.argv.includes('--check')) {
  const have = JSON.parse(fs.readFileSync('weights/manifest.json', 'utf8'));
  if (have.sha256 !== manifest.sha256 || have.bytes !== manifest.bytes || have.file !== file) {
    console.error(`weights/manifest.json is stale for weights/${file}: run node scripts/weights_manifest.mjs`);
    process.exit(1);
  }
} else {
  fs.writeFileSync('weights/manifest.json', JSON.stringify(manifest, null, 1) + '\n');
}
