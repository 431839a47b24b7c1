// Data Operator (user's guide): calls an API once a second, forever. It writes no output; what
// it does is the call itself.
const { callSimpleAPI, wait } = require('./api');

module.exports = async function (_stream) {
  while (true) {
    await callSimpleAPI();
    await wait(1000);
  }
};
