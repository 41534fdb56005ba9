// alexnet: the command-line tool. `alexnet --help` lists the subcommands.

#include "commands.h"
#include "launcher.h"

#include <alexnet/network/error.h>
#include <alexnet/network/runtime.h>

#include <ATen/Parallel.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <exception>
#include <iostream>
#include <thread>

int main(int argc, char** argv) {
  alexnet::app::set_command_line(argc, argv);
  alexnet::use_caching_cpu_allocator();
  auto logger = spdlog::stderr_color_mt("alexnet");
  logger->set_pattern("%^%l%$: %v");
  spdlog::set_default_logger(logger);

  CLI::App app{"AlexNet (Krizhevsky, Sutskever, Hinton, NIPS 2012) on LibTorch"};
  app.require_subcommand(1);
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  app.add_option("--threads", threads, "CPU threads for LibTorch's operators")
      ->check(alexnet::app::at_least(1))
      ->capture_default_str();
  app.parse_complete_callback([&] { at::set_num_threads(threads); });
  alexnet::app::add_summary(app);
  alexnet::app::add_data_commands(app);
  alexnet::app::add_train_commands(app);
  alexnet::app::add_visual_commands(app);
  alexnet::app::add_convert_commands(app);
  alexnet::app::add_ablate_command(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    spdlog::error("{} (see alexnet --help)", e.what());
    return 2;
  } catch (const alexnet::app::ExitStatus& e) {
    return e.code;
  } catch (const alexnet::OptionHint& e) {
    spdlog::error("{} ({})", e.text(), alexnet::app::flag_of(e.option()));
    return 1;
  } catch (const alexnet::OptionError& e) {
    // The library names its options ("batch_size"); here they are flags ("--batch-size").
    spdlog::error("{} {}", alexnet::app::flag_of(e.option()), e.rest());
    return 1;
  } catch (const std::exception& e) {
    spdlog::error("{}", alexnet::error_message(e));
    return 1;
  }
  return 0;
}
