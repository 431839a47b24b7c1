// Data Consumer (user's guide): saves every id it reads to a database and reports each save.
//
// The guide writes `async function` with `yield` inside, which JavaScript refuses; a function
// that yields is an async generator, `async function*`. Send ids as NDJSON:
//   printf '1\n2\n3\n' | si inst input - -t application/x-ndjson --end
const { saveEntryToDB } = require('./db');

module.exports = async function* (input) {
  for await (const id of input) {
    yield await saveEntryToDB(id);
  }
};
