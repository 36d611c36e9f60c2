// Sends one broadcast in the backplane's envelope format with the npm `azure-sb` client:
// proof that any Service Bus client can publish to backplane nodes.
// Env: EMULATOR_URL (http://127.0.0.1:PORT), TOPIC, ORIGIN, PAYLOAD, SEQ.
//
// Envelope v1 (backplane/src/envelope.rs), integers big-endian:
//   version:u8=1  origin:str  count:u32  event*
//   event := kind:u8 (1 broadcast)  seq:u64  target:u8 (1 rooms)  rooms:strs  except:strs  payload:bytes
//   str := len:u32 utf8   strs := count:u32 str*   bytes := len:u32 raw
// Bus message: Label "bp-all", custom property bp_origin = the origin node id.
'use strict';

const azure = require('azure-sb');

function u32(n) {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}
function str(s) {
  const b = Buffer.from(s, 'utf8');
  return Buffer.concat([u32(b.length), b]);
}
function envelope(origin, seq, payload, rooms) {
  const seqBytes = Buffer.alloc(8);
  seqBytes.writeBigUInt64BE(BigInt(seq));
  const body = Buffer.from(payload, 'utf8');
  return Buffer.concat([
    Buffer.from([1]), str(origin), u32(1),
    Buffer.from([1]), seqBytes,
    Buffer.from([1]), u32(rooms.length), ...rooms.map(str), u32(0),
    u32(body.length), body,
  ]);
}

const { EMULATOR_URL, TOPIC, ORIGIN, PAYLOAD, SEQ } = process.env;
const sb = azure.createServiceBusService(`Endpoint=${EMULATOR_URL}/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE`);
const message = {
  body: envelope(ORIGIN, Number(SEQ || 1), PAYLOAD, ['lobby']),
  contentType: 'application/octet-stream',
  brokerProperties: { Label: 'bp-all' },
  customProperties: { bp_origin: ORIGIN },
};
sb.sendTopicMessage(TOPIC, message, (error) => {
  if (error) {
    console.error('send failed:', error);
    process.exit(1);
  }
  console.log('sent');
});
