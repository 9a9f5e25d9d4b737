// Explorer: a keyboard-accessible step scrubber over recorded steps and checkpoints; moving
// it asks the kernel for the step's state (ESD, kernel spectrum) and moves the step cursor.

function scrubber(model, controls, panels) {
  const row = document.createElement("div");
  row.className = "gw-scrub";
  row.dataset.lmSuppressShortcuts = "true"; // keys go to the scrubber, not JupyterLab
  const input = document.createElement("input");
  input.type = "range";
  input.min = "0";
  input.step = "1";
  input.setAttribute("aria-label", "step");
  const label = document.createElement("span");
  const compute = document.createElement("button");
  compute.textContent = "compute here";
  compute.title = "compute the diagnostics not recorded at this step from its checkpoint";
  row.append(input, label, compute);
  controls.appendChild(row);

  const sync = () => {
    const steps = model.get("steps") || [];
    const ckpts = new Set(model.get("checkpoint_steps") || []);
    const step = model.get("step");
    input.max = String(Math.max(steps.length - 1, 0));
    const i = Math.max(steps.indexOf(step), 0);
    if (Number(input.value) !== i) input.value = String(i);
    input.setAttribute("aria-valuetext", "step " + step);
    label.textContent = steps.length ? `step ${step}${ckpts.has(step) ? " (checkpoint)" : ""}` : "no steps";
    compute.hidden = !(model.get("computable") || []).length;
    panels.setCursor(steps.length ? step : null);
  };
  const onInput = () => {
    const steps = model.get("steps") || [];
    const step = steps[Number(input.value)];
    if (step === undefined || step === model.get("step")) return;
    model.set("step", step);
    model.save_changes();
    sync();
  };
  // The keys a range input answers to, handled here too: a host page (JupyterLab) may
  // consume arrow keys before the input sees them.
  const onKey = (event) => {
    const max = Number(input.max);
    const i = Number(input.value);
    const page = Math.max(1, Math.round(max / 10));
    const moves = {
      ArrowLeft: i - 1, ArrowDown: i - 1, ArrowRight: i + 1, ArrowUp: i + 1,
      PageDown: i - page, PageUp: i + page, Home: 0, End: max,
    };
    if (!(event.key in moves)) return;
    event.preventDefault();
    event.stopPropagation();
    input.value = String(Math.min(max, Math.max(0, moves[event.key])));
    onInput();
  };
  const onCompute = () => model.send({ type: "compute", step: model.get("step") });
  input.addEventListener("input", onInput);
  input.addEventListener("keydown", onKey);
  compute.addEventListener("click", onCompute);
  model.on("change:step", sync);
  model.on("change:steps", sync);
  model.on("change:computable", sync);
  sync();
  return () => {
    input.removeEventListener("input", onInput);
    input.removeEventListener("keydown", onKey);
    compute.removeEventListener("click", onCompute);
    model.off("change:step", sync);
    model.off("change:steps", sync);
    model.off("change:computable", sync);
  };
}

async function render({ model, el }) {
  return renderPanels({ model, el }, (controls, panels) => scrubber(model, controls, panels));
}

export default { initialize: initializeModel, render };
