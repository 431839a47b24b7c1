// A local stand-in for the simple web API of the guide's examples: a call that takes the time
// of a real request and reports itself on stdout (`si inst stdout -` shows it).
let calls = 0;

const io = () => new Promise((resolve) => setTimeout(resolve, 5));

async function callSimpleAPI() {
  await io();
  calls += 1;
  console.log(`called the API (${calls})`);
}

const wait = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

module.exports = { callSimpleAPI, wait };
