#!/usr/bin/env bash
# Annotate the low-confidence sifted images with labelme (needs a desktop: labelme is a Qt app).
# Next step: bash scripts/labelme_to_mask.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_args.sh "$@"   # name=value arguments; unknown names refused

result_path=${result_path:-output}
model_name=${model_name:-resnet34}
data_name=${data_name:-decoy_digits}
exp_name=${exp_name:-${model_name}_${data_name}}
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
layout=$("$PYTHON" -m scripts.dirs "${result_path}/${exp_name}")   # folders: scripts/dirs.py
eval "$layout"
image_dir=${image_dir:-$exp_sift_low}  # mode=low image_sift.sh, <class>/<stem>.<ext>
json_dir=${json_dir:-}                   # empty = save each JSON beside its image
labels=${labels:-object}                 # comma-separated label list offered by labelme

LABELME=${LABELME:-$( [ -x .venv/bin/labelme ] && echo .venv/bin/labelme || echo labelme )}

mask_dir=${mask_dir:-$exp_masks}  # where train_model_doctor.sh looks
if [ -n "$json_dir" ]; then
    next="json_dir=$json_dir image_dir=$image_dir mask_dir=$mask_dir bash scripts/labelme_to_mask.sh"
else
    next="json_dir=$image_dir mask_dir=$mask_dir bash scripts/labelme_to_mask.sh"
fi

cat <<GUIDE
Annotating the images in $image_dir
  - draw a polygon (Create Polygons, Ctrl+N) tightly around the object; rectangles, circles
    and AI masks work too, and several shapes per image are merged;
  - label every shape "${labels%%,*}" (shapes labelled __ignore__, lines and points are not counted);
  - one JSON per image: auto-save writes <stem>.json as you move to the next image (D / A);
  - images you leave without a JSON simply get no mask.
GUIDE

no_gui() {
    cat >&2 <<HELP

labelme could not be started: $1
labelme is a Qt desktop application. On a machine with a display:
    pip install labelme            # or: .venv/bin/pip install labelme
    image_dir=$image_dir bash scripts/annotate.sh
(or copy $image_dir to a desktop, annotate it there, and copy the JSON files back).
Then convert the annotations to masks:
    $next
HELP
    exit 1
}

[ -d "$image_dir" ] || { echo "image folder not found: $image_dir (run the sifting step first)" >&2; exit 1; }
command -v "$LABELME" >/dev/null 2>&1 || no_gui "'$LABELME' is not installed"
case "$(uname -s)" in
    Darwin|MINGW*|MSYS*|CYGWIN*) ;;  # native GUI, no X/Wayland variable
    *) [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ] || no_gui "no display (\$DISPLAY and \$WAYLAND_DISPLAY are unset)" ;;
esac

# labelme >= 6 saves without image data and auto-saves by default and hides these flags;
# older versions need them.
opts=()
help_text=$("$LABELME" --help 2>&1 || true)
grep -q -- '--nodata' <<<"$help_text" && opts+=(--nodata)
grep -q -- '--autosave' <<<"$help_text" && opts+=(--autosave)

if [ -z "$json_dir" ]; then
    "$LABELME" "$image_dir" --labels "$labels" ${opts[@]+"${opts[@]}"} || no_gui "labelme exited with an error"
else
    # labelme writes OUTPUT/<stem>.json without the class folder, so open one class at a time.
    for class_dir in "$image_dir"/*/; do
        class=$(basename "$class_dir")
        echo "class $class: close the labelme window when done to go on to the next class"
        "$LABELME" "$class_dir" --output "$json_dir/$class" --labels "$labels" ${opts[@]+"${opts[@]}"} \
            || no_gui "labelme exited with an error"
    done
fi

echo "Annotation done. Next: $next"
